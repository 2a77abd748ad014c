"""The request protocols a server speaks: Open Inference Protocol v2, a simple JSON API and OpenAI's API;
each renders its own errors."""
