"""Storage, artifacts and provenance: reading and writing local paths, s3:// and gs:// safely."""
