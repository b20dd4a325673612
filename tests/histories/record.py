"""Records the golden histories (run once; the .jsonl files are committed).

python -m tests.histories.record
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
import trio.testing

import eventwf
from tests import golden


async def _record(db: str, cls: type, out: Path) -> None:
    async with eventwf.open_engine(db, agents=[golden.ShopAgent], workflows={"ORDER": cls},
                                   wall_clock=lambda: 1_780_000_000.0 + trio.current_time()
                                   ) as engine:
        agent = await engine.get_agent(golden.ShopAgent, "shop")
        await agent.run_workflow("ORDER", {"item": "book"}, id="order-1",
                                 metadata={"customer": "c-7"})
        await trio.sleep(1800)  # stop half-way through the one-hour sleep
    golden.dump(db, out)


def main() -> None:
    for cls, name in ((golden.Order, "in-flight.jsonl"), (golden.OrderV0, "divergent.jsonl")):
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(_record, str(Path(tmp) / "g.db"), cls, golden.HISTORIES / name,
                     clock=trio.testing.MockClock(autojump_threshold=0))


if __name__ == "__main__":
    main()
