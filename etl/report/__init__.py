"""What a run tells its operator: the events and the summary (`etl.report.summary`), progress
on a terminal (`terminal`) and in the status file (`progress`), and the metrics file
(`metrics`).
"""
