"""The on-disk format of an output folder: column names, schemas, exports."""
