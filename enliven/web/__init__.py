"""The web page (index.html, app.js, style.css), served by enliven.server as package data."""
