"""The rules of the product in plain Python: no gRPC, no SQLite."""
