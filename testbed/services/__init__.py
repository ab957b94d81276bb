"""Real servers run in the foreground under supervision, with logs kept."""
