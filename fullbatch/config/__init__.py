"""Configuration: the typed schema, every named choice, the shared limits and how configs are composed.
May import: errors, progress. Importing this package registers nothing; `import fullbatch.config.schema` does."""
