"""Search: the query syntax, text/image/caption queries over the store and index, hybrid ranking with the
words in photos, strong and weak matches, near-duplicates, and the plain values a query answers with."""
