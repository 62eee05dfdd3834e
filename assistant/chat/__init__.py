"""`diffplugin chat`: edit a photo by conversation in the terminal (Textual).

session.py holds what the chat does (no UI); store.py keeps conversations and photo versions in SQLite;
app.py, the screens and widgets render it, with slow work (planning, running plans) in worker threads.
"""
