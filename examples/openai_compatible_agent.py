r"""Ask any OpenAI-compatible endpoint for one Trading-R1 thesis.

    # OpenAI (key from OPENAI_API_KEY)
    python examples/openai_compatible_agent.py --model gpt-4.1-mini
    # a vLLM server:  vllm serve Qwen/Qwen3-4B --port 8000
    python examples/openai_compatible_agent.py --base-url http://localhost:8000/v1 --model Qwen/Qwen3-4B
    # another provider: its URL and the variable that holds its key
    python examples/openai_compatible_agent.py --base-url https://api.together.xyz/v1 \
        --api-key-env TOGETHER_API_KEY --model Qwen/Qwen3-235B-A22B-fp8-tput
    # fully offline:
    #   llm-katan --model "$(python -c 'from tr1_agent.models import smollm2_path; print(smollm2_path())')" \
    #     --name gpt-4.1 --port 8000 --device cpu --no-quantize
    #   (a ~7K-token prompt on 2 CPU cores takes minutes, hence the long timeout)
    python examples/openai_compatible_agent.py --base-url http://127.0.0.1:8000/v1 --model gpt-4.1 \
        --max-tokens 256 --timeout 1800

The answer is cached under $TR1_CACHE (default ~/.cache/tr1): run it twice and the second
run makes no call.
"""

from __future__ import annotations

import argparse

from tr1_agent.llm_agents import OpenAIChatAgent
from tr1_env.context.reference import build_observation
from tr1_env.core.agents import AgentError
from tr1_env.data.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gpt-4.1-mini")
    parser.add_argument("--base-url", default=None, help="endpoint ending in /v1; default OpenAI")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    parser.add_argument("--ticker", default="AAPL")
    parser.add_argument("--date", default="2024-06-03", help="a trading day in the store")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--timeout", type=float, default=120, help="seconds per call; raise it for CPU servers")
    parser.add_argument("--store", default=None, help="TR1 store folder; default the bundled snapshot")
    args = parser.parse_args()

    observation = build_observation(Store(args.store), args.ticker, args.date)
    agent = OpenAIChatAgent(args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                           max_tokens=args.max_tokens, timeout=args.timeout)
    try:
        [decision] = agent.act([observation])
    except AgentError as exc:  # a failed call (HTTP error, no server, timeout): one line naming the endpoint
        raise SystemExit(f"error: {exc}") from None
    print(decision.thesis)
    print(f"\n{args.ticker} {args.date}: {decision.action.name}  {decision.meta}")


if __name__ == "__main__":
    main()
