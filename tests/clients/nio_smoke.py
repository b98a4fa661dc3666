"""A real Matrix client library (matrix-nio) against a real `hearth` process.

Usage: nio_smoke.py PATH/TO/hearth
Starts hearth on an ephemeral port with a temporary database, then through
nio: registers, logs in, lists devices, sets a display name and logs out;
then two clients chat: a room, messages arriving by sync, typing, receipts,
unread counts, a reaction, an edit and a thread reply, as a bot would see them;
then media: an image uploaded, downloaded and thumbnailed, set as the avatar,
and an encrypted attachment that comes back decryptable.
The last line is the summary: "nio: N passed, N failed".
"""

import asyncio
import json
import io
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import nio
from nio.crypto.attachments import decrypt_attachment

from harness import start_hearth

CHECKS = []


def check(name, condition, detail=""):
    CHECKS.append((name, bool(condition)))
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))


def start_server(binary, workdir):
    proc, url, _ = start_hearth(binary, workdir)
    return proc, url


async def scenario(base):
    client = nio.AsyncClient(base, "alice")
    resp = await client.register("alice", "s3cret-pass", device_name="nio register")
    check("register", isinstance(resp, nio.RegisterResponse), resp)
    await client.close()

    client = nio.AsyncClient(base, "@alice:localhost")
    resp = await client.login("s3cret-pass", device_name="nio laptop")
    check("login", isinstance(resp, nio.LoginResponse), resp)
    check("login user_id", getattr(resp, "user_id", None) == "@alice:localhost", resp)

    resp = await client.whoami()
    check("whoami", isinstance(resp, nio.WhoamiResponse) and resp.user_id == "@alice:localhost", resp)

    resp = await client.devices()
    ok = isinstance(resp, nio.DevicesResponse)
    names = sorted(d.display_name for d in resp.devices) if ok else []
    check("list devices", ok and names == ["nio laptop", "nio register"], resp)

    resp = await client.set_displayname("Alice Nio")
    check("set display name", isinstance(resp, nio.ProfileSetDisplayNameResponse), resp)
    resp = await client.get_displayname("@alice:localhost")
    check("get display name", isinstance(resp, nio.ProfileGetDisplayNameResponse) and resp.displayname == "Alice Nio", resp)

    resp = await client.logout()
    check("logout", isinstance(resp, nio.LogoutResponse), resp)
    resp = await client.whoami()
    check("token revoked after logout", not isinstance(resp, nio.WhoamiResponse), resp)

    bad = nio.AsyncClient(base, "alice")
    resp = await bad.login("wrong password")
    check("wrong password refused", isinstance(resp, nio.LoginError) and resp.status_code == "M_FORBIDDEN", resp)
    await bad.close()
    await client.close()


async def wait_for(client, predicate, what, timeout=20):
    """Syncs until `predicate()` holds (long polls; no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = await client.sync(timeout=2000)
        if not isinstance(resp, nio.SyncResponse):
            check(f"sync while waiting for {what}", False, resp)
            return False
        if predicate():
            return True
    return False


async def chat(base):
    alice = nio.AsyncClient(base, "carol")
    await alice.register("carol", "s3cret-pass")
    bob = nio.AsyncClient(base, "dave")
    await bob.register("dave", "s3cret-pass")

    resp = await alice.room_create(name="Tea room", preset=nio.RoomPreset.public_chat)
    check("create room", isinstance(resp, nio.RoomCreateResponse), resp)
    room_id = resp.room_id
    resp = await bob.join(room_id)
    check("join room", isinstance(resp, nio.JoinResponse), resp)

    first = await bob.sync(timeout=0, full_state=True)
    check("initial sync parses", isinstance(first, nio.SyncResponse), first)
    check("room known after sync", room_id in bob.rooms, list(bob.rooms))
    await alice.sync(timeout=0)

    messages = []
    bob.add_event_callback(lambda room, event: messages.append(event.body), nio.RoomMessageText)
    reactions = []
    bob.add_event_callback(lambda room, event: reactions.append(event), nio.ReactionEvent)

    resp = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bot"})
    check("send message", isinstance(resp, nio.RoomSendResponse), resp)
    message_id = resp.event_id
    got = await wait_for(bob, lambda: "hello bot" in messages, "the message")
    check("message arrives by sync", got, messages)
    room = bob.rooms.get(room_id)
    check("room name from state", room is not None and room.display_name == "Tea room", room and room.display_name)
    check("unread count from push rules", room is not None and room.unread_notifications >= 1,
          room and room.unread_notifications)

    resp = await alice.room_typing(room_id, True, timeout=30000)
    check("typing", isinstance(resp, nio.RoomTypingResponse), resp)
    got = await wait_for(bob, lambda: alice.user_id in bob.rooms[room_id].typing_users, "typing")
    check("typing reaches the other client", got, bob.rooms[room_id].typing_users)

    resp = await bob.room_read_markers(room_id, message_id, message_id)
    check("read markers", isinstance(resp, nio.RoomReadMarkersResponse), resp)
    got = await wait_for(bob, lambda: bob.rooms[room_id].unread_notifications == 0, "read")
    check("unread count clears on read", got, bob.rooms[room_id].unread_notifications)

    receipts = []
    alice.add_ephemeral_callback(lambda room, event: receipts.append(event), nio.ReceiptEvent)
    got = await wait_for(alice, lambda: any(
        r.user_id == bob.user_id for e in receipts for r in e.receipts), "the receipt")
    check("receipt reaches the sender", got, receipts)

    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": message_id, "key": "👍"}}
    resp = await alice.room_send(room_id, "m.reaction", reaction)
    check("react", isinstance(resp, nio.RoomSendResponse), resp)
    again = await alice.room_send(room_id, "m.reaction", reaction)
    check("duplicate reaction refused", isinstance(again, nio.RoomSendError) and again.status_code == "M_DUPLICATE_ANNOTATION", again)
    got = await wait_for(bob, lambda: any(r.key == "👍" for r in reactions), "the reaction")
    check("reaction arrives", got, reactions)

    edit = {"msgtype": "m.text", "body": "* hello bots", "m.new_content": {"msgtype": "m.text", "body": "hello bots"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": message_id}}
    resp = await alice.room_send(room_id, "m.room.message", edit)
    check("edit", isinstance(resp, nio.RoomSendResponse), resp)
    reply = {"msgtype": "m.text", "body": "in a thread", "m.relates_to": {"rel_type": "m.thread", "event_id": message_id}}
    resp = await bob.room_send(room_id, "m.room.message", reply)
    check("thread reply", isinstance(resp, nio.RoomSendResponse), resp)

    resp = await bob.room_get_event(room_id, message_id)
    ok = isinstance(resp, nio.RoomGetEventResponse)
    relations = ok and resp.event.source.get("unsigned", {}).get("m.relations", {})
    check("edit bundled", ok and relations.get("m.replace", {}).get("content", {}).get("m.new_content", {}).get("body") == "hello bots", resp)
    check("thread bundled", ok and relations.get("m.thread", {}).get("count") == 1, relations)

    # Search: nio has no method for it, so a bot posts it as nio sends any request.
    query = {"search_categories": {"room_events": {"search_term": "bots", "order_by": "rank",
                                                   "event_context": {"before_limit": 1, "after_limit": 1}}}}
    path = nio.Api._build_path(["search"], {"access_token": bob.access_token})
    raw = await bob.send("POST", path, json.dumps(query), headers={"Content-Type": "application/json"})
    body = await raw.json()
    found = body.get("search_categories", {}).get("room_events", {})
    check("search answers", raw.status == 200 and "results" in found, body)
    hits = [r["result"]["event_id"] for r in found.get("results", [])]
    check("search finds the edited message by its new text", hits == [message_id], found)
    check("search highlights the matched word", found.get("highlights") == ["bots"], found)
    check("search gives context", "events_after" in (found.get("results") or [{}])[0].get("context", {}), found)

    resp = await bob.room_messages(room_id, first.next_batch, direction=nio.MessageDirection.front, limit=50)
    ok = isinstance(resp, nio.RoomMessagesResponse)
    check("messages from a sync token", ok and any(getattr(e, "body", None) == "hello bot" for e in resp.chunk), resp)

    await alice.close()
    await bob.close()


def png(width, height):
    """A small RGB PNG, made without an imaging library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"".join(bytes((x % 256, y % 256, 90)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


async def media(base):
    # (alice of the first scenario: registrations are rate-limited.)
    client = nio.AsyncClient(base, "@alice:localhost")
    resp = await client.login("s3cret-pass", device_name="nio media")
    check("log in for media", isinstance(resp, nio.LoginResponse), resp)
    image = png(64, 48)
    resp, _ = await client.upload(io.BytesIO(image), content_type="image/png", filename="cat.png", filesize=len(image))
    ok = isinstance(resp, nio.UploadResponse)
    check("upload an image", ok and resp.content_uri.startswith("mxc://localhost/"), resp)
    if not ok:
        await client.close()
        return
    mxc = resp.content_uri
    resp = await client.download(mxc)
    ok = isinstance(resp, nio.MemoryDownloadResponse)
    check("download it", ok and resp.body == image, resp)
    check("its type and name", ok and resp.content_type == "image/png" and resp.filename == "cat.png",
          ok and (resp.content_type, resp.filename))
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    resp = await client.thumbnail(server, media_id, 32, 32, method=nio.ResizingMethod.crop)
    ok = isinstance(resp, nio.ThumbnailResponse)
    size = struct.unpack(">II", resp.body[16:24]) if ok and resp.body[:8] == b"\x89PNG\r\n\x1a\n" else None
    check("thumbnail it", ok and size == (32, 32), resp if not ok else size)
    resp = await client.set_avatar(mxc)
    check("set it as the avatar", isinstance(resp, nio.ProfileSetAvatarResponse), resp)
    resp = await client.get_avatar("@alice:localhost")
    check("the avatar is it", isinstance(resp, nio.ProfileGetAvatarResponse) and resp.avatar_url == mxc, resp)

    # An encrypted attachment: the server stores ciphertext, the key travels
    # in the event; what comes back decrypts to what was sent.
    secret = b"the launch codes " * 100
    resp, keys = await client.upload(io.BytesIO(secret), content_type="application/octet-stream",
                                     filename="codes.txt", encrypt=True, filesize=len(secret))
    ok = isinstance(resp, nio.UploadResponse) and keys is not None
    check("upload an encrypted attachment", ok, resp)
    if ok:
        got = await client.download(resp.content_uri)
        fetched = isinstance(got, nio.MemoryDownloadResponse)
        check("the server holds ciphertext", fetched and got.body != secret and len(got.body) == len(secret), got)
        plain = decrypt_attachment(got.body, keys["key"]["k"], keys["hashes"]["sha256"], keys["iv"]) if fetched else None
        check("it decrypts to what was sent", plain == secret)
    await client.close()


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc, base = start_server(binary, workdir)
        try:
            asyncio.run(asyncio.wait_for(scenario(base), 120))
            asyncio.run(asyncio.wait_for(chat(base), 180))
            asyncio.run(asyncio.wait_for(media(base), 120))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    passed = sum(1 for _, ok in CHECKS if ok)
    failed = len(CHECKS) - passed
    print(f"nio: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not CHECKS else 0)


if __name__ == "__main__":
    main()
