"""Configuration: the typed schema, every named choice, the named limits and how configs are composed.

Imports only `fullbatch.errors`. Importing this package registers nothing; `import fullbatch.config.schema` does."""
