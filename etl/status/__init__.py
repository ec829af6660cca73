"""``honeypot-etl status``: where the data of a honeypot database stands, without asking any
service or writing anything.

The library half, for the command and the notebook: `etl.status.report.status_report` (a
`StatusReport`, ``to_dict`` for JSON) and `etl.status.text.render` (plain text). The command
line is `etl.status.cli` (also ``python -m etl.status``). Nothing is imported here, so the
installed command's ``--help`` stays quick.
"""
