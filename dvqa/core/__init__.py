"""What every layer shares: errors and exit codes, findings, files written safely, signals, hashes,
the data folders, and the rule profiles of rules/. Imports nothing else of dvqa."""
