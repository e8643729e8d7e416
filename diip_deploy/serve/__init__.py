"""``diip-serve``: DIIP restoration as an HTTP service with a live web page.

An optional extra (``pip install '.[serve]'``): Starlette for the routes and uvicorn to
serve them.  Jobs live in SQLite beside their inputs and outputs (``store.py``), worker
threads each keep a Restorer open (``workers.py``), uploads are checked before any
decoding (``uploads.py``), and ``app.py`` holds the versioned JSON API and the page.
"""
