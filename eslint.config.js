import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['dist/', 'data/', 'node_modules/', 'coverage/', '.prof/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['bench/**/*.js'],
    languageOptions: { globals: { ...globals.node } },
  },
  {
    // Control characters in these patterns are the point: NUL and lone surrogates PostgreSQL refuses.
    files: ['src/store/postgres/**/*.ts', 'test/**/*.ts'],
    rules: { 'no-control-regex': 'off' },
  },
);
