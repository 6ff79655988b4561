"""HTTP codecs and streams of the proxy: HTTP/1.1 over httptools, header edits, flow control."""
