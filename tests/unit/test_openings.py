"""Turns for opening control connections to one FTP server (tunnel/openings.py)."""

from __future__ import annotations

import asyncio

from tunnel.openings import Openings, Turn

SERVER = ("ssh", 22, "ftp", 21)
OTHER = ("ssh", 22, "ftp2", 21)
LONG = 3600.0  # a hold limit no test reaches


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_turns_beyond_the_limit_wait_and_go_in_arrival_order() -> None:
    async def run() -> list[int]:
        openings = Openings()
        turns = [openings.turn(SERVER) for _ in range(5)]
        order: list[int] = []

        async def take(i: int) -> None:
            await turns[i].take(2, LONG)
            order.append(i)

        tasks = [asyncio.create_task(take(i)) for i in range(5)]
        await settle()
        assert order == [0, 1]
        assert (openings.opening(SERVER), openings.waiting(SERVER)) == (2, 3)
        assert openings.stats() == {"ftp_openings": 2, "ftp_openings_waiting": 3}
        turns[1].end()
        await settle()
        assert order == [0, 1, 2]
        turns[0].end()
        turns[2].end()
        await settle()
        assert order == [0, 1, 2, 3, 4]
        turns[3].end()
        turns[4].end()
        await asyncio.gather(*tasks)
        assert (openings.opening(SERVER), openings.waiting(SERVER)) == (0, 0)
        assert not openings._servers  # nothing kept for a server with no one opening
        return order

    asyncio.run(run())


def test_servers_do_not_share_turns_and_take_is_idempotent() -> None:
    async def run() -> None:
        openings = Openings()
        first, other = openings.turn(SERVER), openings.turn(OTHER)
        await first.take(1, LONG)
        await first.take(1, LONG)  # a retry on a fresh SSH connection keeps its turn
        await asyncio.wait_for(other.take(1, LONG), 1)
        assert openings.opening(SERVER) == openings.opening(OTHER) == 1
        first.end()
        first.end()
        assert openings.opening(SERVER) == 0 and not first.held

    asyncio.run(run())


async def one_holds_two_wait() -> tuple[Openings, list[Turn], list[asyncio.Task[None]]]:
    """A limit of 1: `holder` has the turn; `quitter`, then `next_in_line`, wait for it."""
    openings = Openings()
    holder, quitter, next_in_line = (openings.turn(SERVER) for _ in range(3))
    await holder.take(1, LONG)
    tasks = [asyncio.create_task(quitter.take(1, LONG)),
             asyncio.create_task(next_in_line.take(1, LONG))]
    await settle()
    return openings, [holder, quitter, next_in_line], tasks


def test_a_waiter_that_gives_up_holds_nothing() -> None:
    async def run() -> None:
        openings, (holder, quitter, next_in_line), (gave_up, waits) = await one_holds_two_wait()
        gave_up.cancel()
        await settle()
        assert openings.waiting(SERVER) == 1
        holder.end()
        await asyncio.wait_for(waits, 1)
        assert next_in_line.held and not quitter.held
        next_in_line.end()
        assert not openings._servers

    asyncio.run(run())


def test_a_turn_handed_over_as_its_waiter_gives_up_passes_on() -> None:
    async def run() -> None:
        openings, (holder, _, next_in_line), (gave_up, waits) = await one_holds_two_wait()
        holder.end()  # hands the turn to `quitter`, which is cancelled before it runs
        gave_up.cancel()
        await asyncio.wait_for(waits, 1)
        assert next_in_line.held and openings.opening(SERVER) == 1

    asyncio.run(run())


def test_a_server_that_never_greets_holds_a_turn_only_until_the_hold_limit() -> None:
    async def run() -> None:
        openings = Openings()
        silent, next_in_line = openings.turn(SERVER), openings.turn(SERVER)
        await silent.take(1, 0.05)
        await asyncio.wait_for(next_in_line.take(1, LONG), 5)
        assert not silent.held and next_in_line.held
        silent.end()  # late: the turn it had is already gone, and it frees nothing else
        assert openings.opening(SERVER) == 1

    asyncio.run(run())


def test_a_lower_limit_after_reload_lets_no_one_in_until_below_it() -> None:
    async def run() -> None:
        openings = Openings()
        held = [openings.turn(SERVER) for _ in range(3)]
        for turn in held:
            await turn.take(3, LONG)
        late: Turn = openings.turn(SERVER)
        waits = asyncio.create_task(late.take(1, LONG))  # the reloaded config says 1
        await settle()
        held[0].end()
        held[1].end()
        await settle()
        assert not late.held
        held[2].end()
        await asyncio.wait_for(waits, 1)
        assert late.held

    asyncio.run(run())


def test_a_higher_limit_after_reload_lets_the_waiting_in_at_once() -> None:
    async def run() -> None:
        openings = Openings()
        held = openings.turn(SERVER)
        await held.take(1, LONG)
        waiting = openings.turn(SERVER)
        waits = asyncio.create_task(waiting.take(1, LONG))
        await settle()
        assert not waiting.held
        arriving = openings.turn(SERVER)
        await asyncio.wait_for(arriving.take(3, LONG), 1)  # the reloaded config says 3
        await asyncio.wait_for(waits, 1)
        assert waiting.held and arriving.held and openings.opening(SERVER) == 3

    asyncio.run(run())
