"""Batch prediction (`lavis-ib predict`): input records, batches of one kind, the resumable
results file and the run itself."""
