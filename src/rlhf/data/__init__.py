"""Record types, readers for JSONL and public formats, tokenisation and collation."""
