"""The vocabulary every layer shares: errors, settings and their limits, time, IP address text,
how long answers stay fresh. Imports nothing of ``etl`` above it.
"""
