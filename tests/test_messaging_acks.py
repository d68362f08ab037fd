"""``Messaging.publish``'s own ack handling (one inbox subscription per connection): what it answers, and that
every way an ack can fail leaves as ``Unavailable``, as nats-py's JetStream publish did."""

from __future__ import annotations

import asyncio

import nats
import pytest

from runtime import messaging
from runtime.errors import PayloadTooLarge, Unavailable


async def test_acks_name_the_stream_sequence_and_duplicates(conn: messaging.Messaging) -> None:
    published = await asyncio.gather(*(conn.publish("hades.jobs.high", b"{}", msg_id=f"job-{n}") for n in range(50)))
    assert sorted(p.seq for p in published) == list(range(1, 51))  # each publish got its own ack
    assert not any(p.duplicate for p in published)
    again = await conn.publish("hades.jobs.high", b"{}", msg_id="job-7")
    assert again.duplicate and again.seq == published[7].seq


async def test_a_refused_publish_is_unavailable(conn: messaging.Messaging) -> None:
    with pytest.raises(Unavailable, match="refused"):
        await conn.publish("hades.jobs.high", b"{}", headers={"Nats-Expected-Stream": "NOT_HADES"})


async def test_a_subject_no_stream_takes_is_unavailable(conn: messaging.Messaging) -> None:
    with pytest.raises(Unavailable, match="NoStreamResponseError"):
        await conn.publish("nobody.stores.this", b"{}")


async def test_no_ack_in_time_is_unavailable_and_a_late_ack_is_ignored(clean_nats: str) -> None:
    nc = await nats.connect(clean_nats)
    silent = await nc.subscribe("silent.subject")  # a responder that never answers: no 503, no ack
    conn = messaging.Messaging(nc, publish_timeout_s=0.2)
    try:
        with pytest.raises(Unavailable, match="TimeoutError"):
            await conn.publish("silent.subject", b"{}")
        request = await silent.next_msg(timeout=1)
        await nc.publish(request.reply, b'{"stream": "X", "seq": 1}')  # too late: nobody waits for it any more
        await nc.flush()
        with pytest.raises(Unavailable, match="TimeoutError"):  # the late ack was not taken for this one's
            await conn.publish("silent.subject", b"{}")
    finally:
        await nc.close()


async def test_a_message_too_large_only_with_its_headers_is_refused_and_the_connection_stays(
    conn: messaging.Messaging,
) -> None:
    """The server counts headers in its limit and answers a message over it by resetting the connection, which
    would fail every publish in flight on it; such a message is refused before it is sent."""
    max_payload = conn._nc.max_payload
    payload = b"x" * (max_payload - 20)  # fits without headers, not with its Nats-Msg-Id and trace context
    in_flight = [asyncio.ensure_future(conn.publish("hades.jobs.high", b"{}", msg_id=f"small-{n}")) for n in range(20)]
    with pytest.raises(PayloadTooLarge):
        await conn.publish("hades.jobs.high", payload, msg_id="too-large-with-headers")
    assert all(p.seq > 0 for p in await asyncio.gather(*in_flight))
    assert conn.connected
