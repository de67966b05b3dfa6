"""``coca-video serve``: search and watch a scored video library in the browser (an optional extra:
``pip install 'coca-video[serve]'``).

    library   the rows searched: one consistent read of the embeddings file (and scores table), reloaded on change
    encoder   text and image queries through the model loaded once
    limits    what one request may ask for (the serve config's limits.* block)
    app       the FastAPI routes, token and security headers; page.html is the page
"""
