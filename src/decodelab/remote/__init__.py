"""Models that live on another server (vLLM, llama.cpp's server, another `decodelab serve`), driven through the
OpenAI API's token logprobs: `decodelab.load("http://host:port/v1", model=...)` (see `remote.loading`)."""

API_KEY_VARIABLE = "DECODELAB_API_KEY"  # a server's key, for decodelab serve and for the remote client alike
