"""Ray batch jobs (augment, embed, score) and object storage."""
