"""Files to the raw table: scan, plan and load, the state (cursor) and its formats, the header check, the watch loops."""
