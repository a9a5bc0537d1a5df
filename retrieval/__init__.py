"""The clipdex library: models, embedding, the store, the vector index, queries and evaluation."""
