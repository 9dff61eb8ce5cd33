"""The edge of the gateway, below the endpoints: reading a request body within its deadline,
the HTTP server's header deadline and its log of malformed requests, and the last-resort
handler wrapper. Nothing here knows a dialect; callers render the errors in their own."""
