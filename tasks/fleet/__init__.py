"""One command across many databases: tenants, shards, schema-per-tenant."""
