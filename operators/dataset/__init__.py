"""The on-disk dataset format: column names and schemas, the writer, the reader that lists
complete files, resume state, exports and the report."""
