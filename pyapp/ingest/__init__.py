"""Bulk data in and out: file formats, the staging client, the parallel writers, snapshots and exports."""
