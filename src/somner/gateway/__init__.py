"""Who may ask (keys, scopes), how much (rate limits, quotas), when (a fair bounded queue), and what they used."""
