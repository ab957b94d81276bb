"""Real FTP clients driven through a SOCKS proxy; each reports what it moved and how."""
