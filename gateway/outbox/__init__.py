"""The durable outbox: group-committed, signed, deduplicated; forwarded by one cursor per sink."""
