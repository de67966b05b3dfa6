"""Video question answering: the releases' layouts load (MSRVTT-QA, MSVD-QA with its mapping file); a hand-worked
accuracy counts outside-vocabulary test answers as wrong and drops such training questions; zero-shot ranking
equals the decoder's likelihoods computed independently; the question's decoder outputs do not see the answer after
it; ``score --question`` answers as the task did with the folder it saved; a resumed run ends with the straight
run's weights."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from helpers import free_port, interrupt_at_step, without_key_bias
from safetensors.torch import load_file

from coca_video.cli import main
from coca_video.config import load_config
from coca_video.data.synthetic import write_qa_format
from coca_video.data.videoqa import Question, accuracy, answer_vocabulary, load_qa_dir
from coca_video.model.question_answering import (answer_log_likelihoods, decoder_states, generate_answers,
                                                 question_ids, rank_answers)
from coca_video.tasks import videoqa

FRAMES = 2
QUICK = ["train.epochs=2", "train.batch_size=8", "optim.warmup_steps=2", "decode.workers=0",
         f"decode.num_frames={FRAMES}", "qa.report_questions=4"]


def write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows))


def test_msrvtt_qa_layout_loads_with_category_names(tmp_path):
    write_json(tmp_path / "train_qa.json", [
        {"question": "what is a man doing?", "answer": "sing", "video_id": 0, "id": 0, "category_id": 0},
        {"question": "what is he?", "answer": "man", "video_id": 0, "id": 1, "category_id": 0},
        {"question": "who sings?", "answer": "man", "video_id": 1, "id": 2, "category_id": 1}])
    write_json(tmp_path / "test_qa.json", [
        {"question": "how does he sing?", "answer": "loud", "video_id": 7010, "id": 3, "category_id": 2}])
    qa = load_qa_dir(tmp_path, "/videos")
    assert qa.source == "msrvtt-qa" and len(qa.split("train")) == 3 and qa.split("val") == []
    test = qa.split("test")[0]
    assert test.video == "/videos/video7010.mp4" and test.kind == "how (2)" and test.answer == "loud"
    assert [q.kind for q in qa.split("train")] == ["what (0)", "what (0)", "who (1)"]
    (tmp_path / "question_types.json").write_text('{"1": "person"}')
    assert [q.kind for q in load_qa_dir(tmp_path, "/videos").split("train")] == ["what (0)", "what (0)", "person"]


def test_msvd_qa_layout_maps_ids_to_clips(tmp_path):
    qa_dir, videos = tmp_path / "qa", tmp_path / "YouTubeClips"
    qa_dir.mkdir()
    videos.mkdir()
    (videos / "-4wsuPCjDBc_5_15.avi").write_bytes(b"")
    (videos / "zzit5b_-ukg_5_20.mp4").write_bytes(b"")  # a re-encoded copy: found by its other extension
    (qa_dir / "youtube_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\nzzit5b_-ukg_5_20 vid2\n")
    write_json(qa_dir / "train_qa.json", [{"question": "who is cooking?", "answer": "woman", "video_id": 1, "id": 0}])
    write_json(qa_dir / "test_qa.json", [{"question": "what is a cat doing?", "answer": "play", "video_id": 2,
                                          "id": 1}])
    qa = load_qa_dir(qa_dir, videos)
    assert qa.source == "msvd-qa"
    assert qa.split("train")[0].video == str(videos / "-4wsuPCjDBc_5_15.avi")
    assert qa.split("test")[0].video == str(videos / "zzit5b_-ukg_5_20.mp4")
    assert [q.kind for q in qa.questions] == ["who", "what"]  # no category_id: the first word


def test_accuracy_counts_oov_test_answers_and_drops_oov_training_questions(tmp_path):
    rows = [("a.mp4", "what colour?", "red", "train")] * 3 + [("b.mp4", "what colour?", "blue", "train")] * 2 + [
        ("c.mp4", "what colour?", "green", "train"),  # outside a 2-answer vocabulary: dropped
        ("d.mp4", "what colour?", "red", "test"), ("d.mp4", "who is it?", "blue", "test"),
        ("e.mp4", "what colour?", "green", "test"), ("e.mp4", "who is it?", "yellow", "test")]  # 2 OOV answers
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([("video", "question", "answer", "split"), *rows])
    cfg = load_config(videoqa.VideoQAConfig, None, [f"source.qa_csv={path}", f"source.videos={tmp_path}",
                                                    "qa.num_answers=2"])
    data = videoqa.QAData(cfg)
    assert data.answers == ["red", "blue"] and data.dropped == 1 and len(data.train) == 5 and data.oov == 2
    assert data.videos == [str(tmp_path / v) for v in ("a.mp4", "b.mp4", "d.mp4", "e.mp4")]  # c: no question kept
    scores = accuracy(data.evaluated, ["red", "red", "red", "blue"])  # right, wrong, wrong (OOV), wrong (OOV)
    assert scores.overall == 25.0 and scores.per_type == {"what": 50.0, "who": 0.0}
    assert answer_vocabulary(data.set.split("train"), 3) == ["red", "blue", "green"]


def test_zero_shot_ranking_is_the_decoders_likelihood_of_the_answer(tiny_model):
    """Each answer's score is the summed log-probability of its tokens and the EOT after the question, computed
    here from the teacher-forced logits of the full "question answer" text, one pair at a time."""
    from coca_video.tokenizer import ClipBpeTokenizer

    tokenizer = ClipBpeTokenizer(context_length=tiny_model.cfg.text.context_length)
    torch.manual_seed(1)
    encoder_tokens = torch.randn(2, 2 * tiny_model.image_encoder.num_tokens, tiny_model.cfg.vision.width)
    questions, answers = ["what is it?", "who runs?"], ["red", "a big dog", "blue"]
    image_tokens = tiny_model.generative_tokens(encoder_tokens, 2)
    scores = answer_log_likelihoods(tiny_model, image_tokens, tokenizer, questions, answers)
    for b, question in enumerate(questions):
        for k, answer in enumerate(answers):
            full = tokenizer([f"{question} {answer}"])
            length = int((full != 0).sum())
            question_length = int((tokenizer([question]) != 0).sum()) - 1  # SOT + question
            with torch.no_grad():
                logits = tiny_model.teacher_forced_caption_logits(encoder_tokens[b:b + 1], full[:, :length], 2)
            logp = F.log_softmax(logits[0], -1)  # (length-1, V): row i predicts token i+1
            expected = sum(float(logp[i - 1, full[0, i]]) for i in range(question_length, length))
            assert float(scores[b, k]) == pytest.approx(expected, abs=1e-4)
    best = rank_answers(tiny_model, encoder_tokens, tokenizer, questions, answers, 2)
    assert best == [answers[int(k)] for k in scores.argmax(1)]


def test_question_outputs_do_not_see_the_answer(tiny_model):
    from coca_video.tokenizer import ClipBpeTokenizer

    tokenizer = ClipBpeTokenizer(context_length=tiny_model.cfg.text.context_length)
    image_tokens = tiny_model.generative_tokens(torch.randn(1, tiny_model.image_encoder.num_tokens,
                                                            tiny_model.cfg.vision.width))
    alone = question_ids(tokenizer, ["what colour is the car?"])
    joined = question_ids(tokenizer, ["what colour is the car?"], ["dark red"])
    assert int(alone.prefix[0]) == int(joined.prefix[0]) == 7  # SOT + six question tokens
    with torch.no_grad():
        states = [decoder_states(tiny_model, image_tokens, x.ids)[:, :int(x.prefix[0])] for x in (alone, joined)]
    torch.testing.assert_close(states[0], states[1], rtol=1e-5, atol=1e-5)


def test_generated_answer_is_the_greedy_continuation_of_the_question(tiny_model):
    """The KV-cached decoding after ``SOT question`` equals argmax steps recomputed from the full text each time."""
    from coca_video.tokenizer import ClipBpeTokenizer

    tokenizer = ClipBpeTokenizer(context_length=tiny_model.cfg.text.context_length)
    torch.manual_seed(2)
    encoder_tokens = torch.randn(2, 2 * tiny_model.image_encoder.num_tokens, tiny_model.cfg.vision.width)
    questions = ["what is it?", "where is the dog going?"]
    generated = generate_answers(tiny_model, encoder_tokens, tokenizer, questions, 2, max_tokens=3)
    eot = tiny_model.cfg.text.eot_id
    for b, question in enumerate(questions):
        ids = question_ids(tokenizer, [question])
        text, answer = ids.ids[:, :int(ids.prefix[0])], []
        for _ in range(3):
            with torch.no_grad():
                logits = tiny_model.teacher_forced_caption_logits(encoder_tokens[b:b + 1],
                                                                  torch.cat([text, text[:, :1]], 1), 2)
            token = int(logits[0, -1].argmax())
            if token == eot:
                break
            answer.append(token)
            text = torch.cat([text, torch.tensor([[token]])], 1)
        assert generated[b] == (tokenizer.batch_decode(torch.tensor([answer]))[0].strip() if answer else "")


@pytest.fixture(scope="module")
def qa_set(tmp_path_factory) -> dict:
    """A synthetic question set: 8 training clips (24 questions), 4 test clips."""
    root = tmp_path_factory.mktemp("videoqa")
    qa_dir, videos = write_qa_format(root / "data", 8, 4, num_frames=FRAMES)
    return {"root": root, "qa_dir": qa_dir, "videos": videos}


@pytest.fixture(scope="module")
def trained(qa_set) -> dict:
    root = qa_set["root"]
    cfg = load_config(videoqa.VideoQAConfig, None, [f"source.qa_dir={qa_set['qa_dir']}", f"source.videos="
                                                    f"{qa_set['videos']}", f"output_dir={root / 'run'}",
                                                    "temporal_embedding=true", *QUICK])
    return {**qa_set, "result": videoqa.run(cfg)}


def task_predictions(run: Path) -> list[dict]:
    with (run / "predictions.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_score_question_answers_as_the_task_did(trained, tmp_path):
    run = trained["root"] / "run"
    predicted = task_predictions(run)
    questions = sorted({row["question"] for row in predicted})[:2]
    out = tmp_path / "scores.parquet"
    code = main(["score", str(trained["videos"]), "--qa-model", str(run / "model"), "--out", str(out),
                 *[arg for q in questions for arg in ("--question", q)], "decode.workers=0"])
    assert code == 0
    rows = pq.read_table(out, columns=["path", "answer_1", "answer_2"]).to_pylist()
    scored = {(Path(row["path"]).name, q): row[f"answer_{i}"] for row in rows for i, q in enumerate(questions, 1)}
    compared = [(row["prediction"], scored[(Path(row["video"]).name, row["question"])])
                for row in predicted if row["question"] in questions]
    assert compared and all(task == score for task, score in compared), compared
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"]["temporal_embedding"] and (run / "report.html").is_file()
    assert "frame_time.embedding" in load_file(run / "model" / "model.safetensors")


@pytest.mark.slow
def test_resumed_run_ends_with_the_straight_runs_weights(trained, tmp_path, monkeypatch):
    base = [f"source.qa_dir={trained['qa_dir']}", f"source.videos={trained['videos']}", "optim.ema=0.9", *QUICK]

    def run(folder: str, *extra: str) -> None:
        videoqa.run(load_config(videoqa.VideoQAConfig, None, [f"output_dir={tmp_path / folder}", *base, *extra]))

    run("straight")
    interrupt_at_step(monkeypatch, 4)  # Ctrl-C in the second epoch (3 steps an epoch): the first is checkpointed
    with pytest.raises(KeyboardInterrupt):
        run("resumed")
    monkeypatch.undo()
    run("resumed", "resume=auto")
    for name in ("model.safetensors", "answer_head.safetensors"):
        straight = load_file(tmp_path / "straight" / "model" / name)
        resumed = load_file(tmp_path / "resumed" / "model" / name)
        assert straight.keys() == resumed.keys()
        for key in straight:
            torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


@pytest.mark.distributed
def test_two_processes_take_the_steps_of_one(qa_set, tmp_path):
    """Global batches of 5 questions split 3/2 between two gloo ranks; the loss is the mean over the global batch's
    questions, so the two-process run ends with the one-process run's weights (the position tables and the answer
    head included) and gives the same answers."""
    base = [f"source.qa_dir={qa_set['qa_dir']}", f"source.videos={qa_set['videos']}", f"cache_dir={tmp_path / 'cache'}",
            "temporal_embedding=true", "spatial_embedding=true", "train.epochs=2", "train.batch_size=5",
            "optim.warmup_steps=2", "decode.workers=0", f"decode.num_frames={FRAMES}", "qa.report_questions=0"]
    videoqa.run(load_config(videoqa.VideoQAConfig, None, [f"output_dir={tmp_path / 'one'}", *base]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "coca_video.cli", "videoqa", f"output_dir={tmp_path / 'two'}",
           *base]
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.safetensors", "answer_head.safetensors"):
        one, two = (load_file(tmp_path / run / "model" / name) for run in ("one", "two"))
        assert one.keys() == two.keys() and (name != "model.safetensors" or "frame_space.embedding" in one)
        for key in one:
            torch.testing.assert_close(without_key_bias(key, two[key]), without_key_bias(key, one[key]), rtol=1e-4,
                                       atol=1e-5, msg=key)
    assert task_predictions(tmp_path / "two") == task_predictions(tmp_path / "one")
    losses = [[json.loads(line)["train_loss"] for line in (tmp_path / run / "metrics.jsonl").open()]
              for run in ("one", "two")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_synthetic_questions_are_answered_by_their_clips(tmp_path):
    from coca_video.data.synthetic import MOTIONS, ColourChangeClips, SyntheticVideos

    qa_dir, videos = write_qa_format(tmp_path, 4, 2, num_frames=2)
    qa = load_qa_dir(qa_dir, videos)
    train = qa.split("train")
    assert len(train) == 12 and len(qa.split("test")) == 6 and len(list(videos.glob("video*.mp4"))) == 6
    moving, changing = SyntheticVideos(2, num_frames=2, p_reference=0.0), ColourChangeClips(2, num_frames=2)
    by_kind = {(q.video, q.kind): q.answer for q in train}
    for i in range(2):
        scene, first = moving.scene(i), str(videos / f"video{i}.mp4")
        assert by_kind[(first, "colour")] == scene.main.colour and by_kind[(first, "direction")] in MOTIONS
        assert by_kind[(first, "direction")] == scene.motion and by_kind[(first, "shape")] == scene.main.shape
        turned, clip = changing.scene(i), str(videos / f"video{2 + i}.mp4")
        assert (by_kind[(clip, "start colour")], by_kind[(clip, "end colour")]) == (turned.main.colour, turned.turns)
