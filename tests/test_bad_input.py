"""Bad input gets the right 4xx with the error shape, and the server keeps serving."""

import httpx
import pytest


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/api/chat/message", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"message": ""}, 422, "empty_message"),
        ({"message": " \n\t "}, 422, "empty_message"),
        ({"message": "x" * 4001}, 413, "message_too_long"),
        ({"message": 42}, 422, "invalid_request"),
        ({"message": ["hi"]}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"message": "hi", "conversation_id": 7}, 422, "invalid_request"),
        ({"message": "hi", "metadata": "x"}, 422, "invalid_request"),
        ({"message": "hi", "conversation_id": "unknown"}, 404, "conversation_not_found"),
    ],
)
async def test_bad_turns(
    client: httpx.AsyncClient, path: str, body: dict, status: int, code: str
) -> None:
    assert_error(await client.post(path, json=body), status, code)


async def test_malformed_json_and_wrong_top_level_type(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    assert_error(
        await client.post("/api/chat/message", content=b"{bad", headers=headers),
        400,
        "invalid_json",
    )
    assert_error(
        await client.post("/api/chat/message", content=b"[1]", headers=headers),
        422,
        "invalid_request",
    )


async def test_unknown_ids(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/chat/runs/nope/events"), 404, "run_not_found")
    assert_error(await client.post("/api/chat/runs/nope/stop"), 404, "run_not_found")
    assert_error(await client.get("/api/chat/history/nope"), 404, "conversation_not_found")
    assert_error(await client.delete("/api/chat/history/nope"), 404, "conversation_not_found")
    assert_error(await client.get("/api/nowhere"), 404, "not_found")


async def test_bad_last_event_id(client: httpx.AsyncClient) -> None:
    run_id = (await client.post("/api/chat/message", json={"message": "hi"})).json()["run_id"]
    url = f"/api/chat/runs/{run_id}/events"
    for value in ("other-run:3", "abc", f"{run_id}:x"):
        assert_error(
            await client.get(url, headers={"Last-Event-ID": value}), 400, "invalid_last_event_id"
        )
    assert_error(await client.get(f"{url}?after_seq=-1"), 422, "invalid_request")


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/chat/message", json={"message": ""}, headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["error"]["request_id"] == "abc-123"


async def test_server_keeps_serving_after_bad_input(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post(
            "/api/chat/message", content=b"\xff\xfe", headers={"content-type": "application/json"}
        )
    response = await client.post("/api/chat/message", json={"message": "hi"})
    assert response.status_code == 200
    assert (await client.get("/health")).json()["status"] == "ok"


async def test_erase_a_conversation(client: httpx.AsyncClient) -> None:
    reply = (await client.post("/api/chat/message", json={"message": "hi"})).json()
    response = await client.delete(f"/api/chat/history/{reply['conversation_id']}")
    assert response.status_code == 204
    assert_error(
        await client.get(f"/api/chat/history/{reply['conversation_id']}"),
        404,
        "conversation_not_found",
    )
    assert_error(await client.get(reply["events_url"]), 404, "run_not_found")
