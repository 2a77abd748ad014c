"""The request protocols a server speaks: Open Inference Protocol v2 and a simple JSON API."""
