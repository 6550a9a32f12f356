"""What a run leaves on disk: its record (schema, statuses, metrics) and the atomic writer every
file of genexp goes through. The lowest layer: it imports nothing of genexp's."""
