"""``honeypot-etl status``: where the data of a honeypot database stands, without asking any
service or writing anything.

The library half, for the command and the notebook: `etl.status.collect.status_report` (a
`StatusReport`, ``to_dict`` for JSON) and `etl.status.text.render` (plain text). The command
line is `etl.cli.status` (also ``python -m etl.status``). Nothing is imported here, so the
installed command's ``--help`` stays quick.
"""
