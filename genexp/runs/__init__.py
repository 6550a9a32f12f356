"""What a run leaves on disk: its record (schema, statuses, metrics), how a config it recorded under
an earlier genexp reads today (config_keys), and the atomic writer every file of genexp goes
through. The lowest layer: it imports nothing of genexp's."""
