"""Where a topology's hosts live. `netns` (the default) needs root and no Docker."""
