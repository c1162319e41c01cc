"""Face detection, landmarks, alignment and synthetic masks."""
