"""glidecli: text-to-image generation and editing with OpenAI's GLIDE models."""

__version__ = "0.1.0"
