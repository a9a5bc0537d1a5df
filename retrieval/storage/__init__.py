"""Storage: the metadata store (SQLite or PostgreSQL), its schema and migrations, and the FAISS index kept as
its cache. The one place that knows the schema."""
