"""Demo 2: a TMP36 on an MCP3008 streams readings to an event function; alerts come back."""
