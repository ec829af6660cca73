"""MaxMind GeoLite2 (offline): the frame joined against the City and ASN files
(`etl.sources.maxmind.steps`), and whether a file is whole (`etl.sources.maxmind.check`).
"""
