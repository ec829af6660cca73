"""The enrichment sources, one folder each: MaxMind (offline, `etl.sources.maxmind`), Team
Cymru and GreyNoise (network, `etl.sources.cymru`, `etl.sources.greynoise`). A source's folder
holds its client, its wire parser, its frame steps and its phase; what the network phases
share is here (`etl.sources.events`, `etl.sources.failures`).
"""
