"""The honeypot database, SQLite or PostgreSQL: opened (`database`, `backends`), recognised
(`recognise`), locked (`lock`), read (`select`, `sessions`, `reader`), written (`write`,
`upsert`, `ddl`), and our own tables beside cowrieprocessor's (`runlog`, `pending`).
"""
