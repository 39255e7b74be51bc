import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import lively
from PIL import Image

from seemore.cli import main
from seemore.config import apply_overrides, get_preset
from seemore.data.collate import TaskDataset, collate
from seemore.data.datasets import task_names
from seemore.data.images import to_tensor
from seemore.data.shapes import ShapesWorld
from seemore.errors import UserError
from seemore.generation import generate
from seemore.objectives import build_model, training_data
from seemore.objectives.load import load_folder
from seemore.prompt import IGNORE_INDEX, conversation_sequence, drawing_sequence
from seemore.train.loop import train

PROMPT = "a large red circle at the top left"


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vq")
    config = apply_overrides(get_preset("tiny"), ["train.objective=vq", "train.steps=40",
                                                  "train.batch_size=16", "train.precision=fp32"])
    train(config, out, progress=False)
    return out


def unified_config(vq_run, *overrides):
    return apply_overrides(get_preset("tiny"), [f"train.vq_from={vq_run}",
                                                "model.decoder.max_seq_len=256",
                                                "train.precision=fp32", *overrides])


@pytest.fixture(scope="module")
def drawer(vq_run):
    """An untrained tiny model that draws with the trained tiny VQ-VAE (4x4 codes)."""
    torch.manual_seed(0)
    config = unified_config(vq_run)
    model = build_model(config)
    from seemore.train.loop import prepare

    prepare(model, model.run)
    return model.eval()


def test_drawing_sequence_puts_the_codes_after_the_caption(drawer):
    tok = drawer.tokenizer
    seq = drawing_sequence(tok, "a red circle", 16, uncond=False)
    assert seq.ids[0] == tok.bos_id and tok.decode(seq.ids) == "a red circle"
    boi = seq.ids.index(tok.boi_id)
    assert seq.ids[boi + 17] == tok.eoi_id and len(seq.ids) == boi + 18
    assert seq.labels[boi + 16] == tok.eoi_id  # the last code predicts <eoi>
    assert set(seq.labels) - {tok.eoi_id} == {IGNORE_INDEX}
    uncond = drawing_sequence(tok, "a red circle", 16, uncond=True)
    assert uncond.ids[:2] == [tok.bos_id, tok.boi_id]


def test_the_model_writes_its_vq_codes_into_the_slots_and_labels(drawer):
    tok, world = drawer.tokenizer, ShapesWorld(32)
    items = []
    for i in range(3):
        image, caption = world.pair("train", i)
        from seemore.data.images import to_tensor

        items.append((to_tensor(image), drawing_sequence(tok, caption, 16, uncond=i == 2)))
    batch = collate(items, tok.pad_id)
    ids, labels = drawer.write_codes(batch.ids, batch.labels, batch.images)
    codes = drawer.vq.encode(batch.images) + tok.code_ids[0]
    for row in range(3):
        boi = int((batch.ids[row] == tok.boi_id).nonzero())
        assert torch.equal(ids[row, boi + 1: boi + 17], codes[row])
        assert torch.equal(labels[row, boi: boi + 16], codes[row])  # each predicts the next
        assert labels[row, boi + 16] == tok.eoi_id
        assert (labels[row, :boi] == IGNORE_INDEX).all()


def test_a_training_step_never_reads_the_device(drawer, monkeypatch):
    """On a GPU a host sync per step stalls the pipeline: the loss of a batch built by
    collate must not turn a tensor into a Python value, and must equal the checked path."""
    tok, world = drawer.tokenizer, ShapesWorld(32)
    n = drawer.config.n_visual_tokens
    drawings = [drawing_sequence(tok, world.pair("train", i)[1], 16, uncond=False)
                for i in range(2)]
    questions = [conversation_sequence(tok, n, [("what color is the circle?", "red")])] * 2
    images = [to_tensor(world.pair("train", i)[0]) for i in range(2)]
    batches = [collate(list(zip(images, seqs, strict=True)), tok.pad_id)
               for seqs in (drawings, questions)]
    assert [(b.sees, b.draws) for b in batches] == [(False, True), (True, False)]
    checked = [drawer(b.ids, b.images, b.labels)[1] for b in batches]

    def sync(*args):
        raise AssertionError("the training forward read a tensor on the host")

    for name in ("__bool__", "__int__", "__float__", "item", "tolist", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    losses = [drawer(b.ids, b.images, b.labels, b.sees, b.draws)[1] for b in batches]
    monkeypatch.undo()
    for loss, expected in zip(losses, checked, strict=True):
        torch.testing.assert_close(loss, expected)


def test_task_dataset_draws_in_its_share_of_batches(drawer):
    config = drawer.run
    assert "draw" in task_names(config)
    data = TaskDataset(ShapesWorld(32), "train", drawer.tokenizer, config.model.n_visual_tokens,
                       task_names(config), 1, length=400, group=2, n_codes=16, draw_share=0.5,
                       uncond_share=0.25)
    kinds = []
    for i in range(400):
        ids = data[i][1].ids
        if drawer.tokenizer.boi_id not in ids:
            kinds.append("text")
        else:
            kinds.append("uncond" if ids[1] == drawer.tokenizer.boi_id else "draw")
    assert all(kinds[i] == "text" or kinds[i + 1] != "text" for i in range(0, 400, 2))
    drawn = 400 - kinds.count("text")
    assert 140 < drawn < 260  # about half
    assert 0.1 < kinds.count("uncond") / drawn < 0.4  # about a quarter of the drawings


def test_guidance_of_one_equals_the_prompt_alone_and_the_cache_changes_nothing(drawer):
    model = lively(copy.deepcopy(drawer))  # codes that vary, so that agreeing means something
    tok = model.tokenizer
    cond = [[tok.bos_id, *tok.encode(PROMPT), tok.boi_id]]
    uncond = [[tok.bos_id, tok.boi_id]]

    def codes(**kw):
        return torch.stack(list(generate(model, cond, None, 16, stop_at_eos=False,
                                         vocab=tok.code_ids, **kw)), 1)

    plain = codes()
    assert len(set(plain.flatten().tolist())) >= 4
    assert torch.equal(codes(uncond=uncond, guidance=1.0), plain)
    guided = codes(uncond=uncond, guidance=3.0)
    assert not torch.equal(guided, plain)
    assert torch.equal(codes(uncond=uncond, guidance=3.0, use_cache=False), guided)
    assert ((guided >= tok.code_ids[0]) & (guided < tok.code_ids[-1] + 1)).all()


def test_drawing_steps_see_the_code_positions_training_gives_them(drawer):
    """Greedy cached drawing writes the codes that a teacher-forced forward over the same
    sequence predicts, with code position embeddings large enough to change the codes when
    a step got the wrong one."""
    tok = drawer.tokenizer
    prompt = [tok.bos_id, *tok.encode(PROMPT), tok.boi_id]
    saved = drawer.code_position.weight.clone()
    try:
        with torch.no_grad():
            drawer.code_position.weight.normal_(0, 1.0)
        drawn = torch.stack(list(generate(drawer, [prompt], None, 16, stop_at_eos=False,
                                          vocab=tok.code_ids,
                                          step_embeddings=drawer.code_position.weight)), 1)
        ids = torch.cat([torch.tensor([prompt]), drawn], dim=1)
        with torch.no_grad():
            logits = drawer(ids, None)[0][0, len(prompt) - 1:-1]
        predicted = logits[:, tok.code_ids].argmax(-1) + tok.code_ids[0]
        assert torch.equal(predicted, drawn[0])
        unplaced = torch.stack(list(generate(drawer, [prompt], None, 16, stop_at_eos=False,
                                             vocab=tok.code_ids)), 1)
        assert not torch.equal(unplaced, drawn)  # the positions do matter to these codes
    finally:
        with torch.no_grad():
            drawer.code_position.weight.copy_(saved)


def test_draw_returns_pil_images_and_a_seed_repeats_them(drawer):
    images = drawer.draw(PROMPT, n=2, seed=1, top_k=20)
    assert len(images) == 2 and all(isinstance(im, Image.Image) for im in images)
    assert images[0].size == (32, 32)
    again = drawer.draw(PROMPT, n=2, seed=1, top_k=20)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(images, again, strict=True))


def test_bad_drawing_requests_are_refused(drawer, tiny_model, vq_run, trained_run):
    with pytest.raises(UserError, match="does not draw"):
        tiny_model.draw(PROMPT)
    with pytest.raises(UserError, match="too long to draw"):
        drawer.draw(PROMPT * 8)
    with pytest.raises(UserError, match="does not know"):
        drawer.draw("a large red circle @ the top")
    with pytest.raises(UserError, match="temperature must be 0 .greedy. or more, got -1"):
        drawer.draw(PROMPT, temperature=-1)
    for guidance in (-1.0, float("nan"), "2"):  # NaN used to draw from NaN logits
        with pytest.raises(UserError, match=f"guidance must be a number >= 0, got {guidance!r}"):
            drawer.draw(PROMPT, guidance=guidance)
    assert drawer.draw_batch([]) == []
    with pytest.raises(UserError, match="draw needs an image tokenizer"):
        apply_overrides(get_preset("tiny"), ["data.tasks=caption,draw"])
    with pytest.raises(UserError, match="tasks_per_image must be 1"):
        build_model(unified_config(vq_run, "data.tasks_per_image=2"))
    with pytest.raises(UserError, match="not a VQ-VAE"):
        build_model(apply_overrides(get_preset("tiny"), [f"train.vq_from={trained_run[0]}"]))
    with pytest.raises(UserError, match="not a run folder"):
        build_model(apply_overrides(get_preset("tiny"), [f"train.vq_from={vq_run.parent}"]))


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_unified_model_learns_to_draw_and_reloads(vq_run, tmp_path, capsys, tokenizer):
    config = unified_config(vq_run, "train.steps=150", "data.draw_share=0.5",
                            f"model.tokenizer={tokenizer}")
    untrained = build_model(config)
    from seemore.train.loop import prepare

    prepare(untrained, untrained.run)

    def drawing_loss(model):
        only_draw = unified_config(vq_run, "data.tasks=draw", "data.uncond_share=0",
                                   f"model.tokenizer={tokenizer}")
        data, collate_fn = training_data(model, only_draw, split="val", length=64)
        with torch.no_grad():
            return model.eval().loss(collate_fn([data[i] for i in range(64)])).item()

    before = drawing_loss(untrained)
    model = train(config, tmp_path, progress=False)
    after = drawing_loss(model)
    assert after < 0.8 * before, (before, after)
    loaded = load_folder(tmp_path)
    assert loaded.vq is not None
    assert (loaded.draw(PROMPT, seed=0)[0].tobytes() == model.draw(PROMPT, seed=0)[0].tobytes())

    out = tmp_path / "grid.png"
    assert main(["draw", str(tmp_path), PROMPT, "-o", str(out), "-n", "3", "--seed", "0"]) == 0
    assert Image.open(out).width > 3 * 32  # a grid of three, enlarged, with the prompt
    assert main(["draw", str(tmp_path), PROMPT, "-o", str(tmp_path / "x.jpg")]) == 2
    assert "give a .png path" in capsys.readouterr().err
    # examples/text_to_image.py as written, on this run
    example = Path(__file__).parents[1] / "examples" / "text_to_image.py"
    done = subprocess.run([sys.executable, str(example), "--run", str(tmp_path), "--out",
                           str(tmp_path / "drawings.png")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "describes its first drawing as" in done.stdout
    assert Image.open(tmp_path / "drawings.png").width > 4 * 32


def test_the_server_draws_through_the_images_api(drawer):
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from seemore.serving.app import create_app

    with TestClient(create_app(drawer, "drawer", True)) as client:
        def post(**body):
            return client.post("/v1/images/generations", json={"prompt": PROMPT, **body})

        reply = post(n=2, seed=3, size="32x32")
        assert reply.status_code == 200, reply.text
        images = [Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))
                  for d in reply.json()["data"]]
        assert [im.size for im in images] == [(32, 32)] * 2
        assert post(n=2, seed=3).json()["data"] == reply.json()["data"]  # a seed repeats them
        for body, words in ((dict(n=9), "n must be"), (dict(size="512x512"), "size must be"),
                            (dict(prompt=""), "prompt must be"),
                            (dict(response_format="url"), "b64_json")):
            response = post(**body)
            assert response.status_code == 400 and words in response.json()["error"]["message"]
        # chat still works beside it: the drawing ran in the engine's own thread
        chat = client.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "a large red circle"}]})
        assert chat.status_code == 400 and "image_url" in chat.json()["error"]["message"]


def test_the_web_page_draws_for_a_model_that_draws(drawer):
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_serve import chromium, live_server

    with live_server(drawer) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url.removesuffix("/v1") + "/")
        sync_api.expect(page.locator("#drawing")).to_be_visible()
        page.fill("#prompt", PROMPT)
        page.click("#drawbutton")
        sync_api.expect(page.locator("#drawings img")).to_have_count(4, timeout=30_000)
        browser.close()
