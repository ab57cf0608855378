"""Reference numbers for the IJB-B/C protocols on generated IJB-style data, computed the way insightface's
scripts compute them: 1:1 as recognition/arcface_torch/eval_ijbc.py (template pooling in float32 numpy,
sklearn.preprocessing.normalize, dot-product scores, sklearn.metrics.roc_curve and auc, the TAR read as
`min(zip(abs(fpr - far), range(len(fpr))))` on the reversed curve); 1:N as
recognition/_evaluation_/ijb/ijb_evals.py's evaluation_1N per gallery and its mean. Written from those
scripts' steps, not from our implementation.

One decision of ours is mirrored here and named: `ijb_evals.py` ranks with np.argsort, whose order among
equal scores is unspecified; the reference counts every other gallery template scoring at least as high
as the mate as ranked above it, as ours does (only the case with a deliberate tie depends on it).

Usage: ijb_ref.py OUT_DIR. Writes OUT_DIR/ijb/<case>/: meta/ (the real file names), features.safetensors
(`features` [N, D] float32, row i = image i of the 5pts file, already flip-summed), expected.json, and for
the bitwise checks template_sums.f32 (pooled float32 sums, templates in sorted id order) and scores.f64.
"""
import json
import os
import sys

import numpy as np

try:
    import sklearn.preprocessing
    from safetensors.numpy import save_file
    from sklearn.metrics import auc, roc_curve
except ImportError as e:
    sys.exit(f"ijb_ref.py: {e}; pip install scikit-learn safetensors")

FARS = [10 ** -6, 10 ** -5, 10 ** -4, 10 ** -3, 10 ** -2, 10 ** -1]


def far_key(far):
    return "%.0e" % far


# ---------------------------------------------------------------- generation

def generate(rng, n_subjects, templates_per_subject, dim, n_pairs, duplicates, gallery):
    """Subjects with a direction each; images = direction * norm + noise. Templates of 1-4 media of 1-4
    images each, under sparse random ids; image rows shuffled. `duplicates` templates are exact copies of
    others (ties in scores). With `gallery`, one gallery template per subject split into two galleries, and
    probe templates: returns the 1:N lists too."""
    centres = rng.normal(size=(n_subjects, dim))
    rows = []  # (name, template, media, subject, feature, score text, landmarks)
    templates = {}  # id -> subject
    used_ids = set()

    def new_id():
        while True:
            t = int(rng.randint(1, 10 ** 6))
            if t not in used_ids:
                used_ids.add(t)
                return t

    media_next = [1000]

    copies = []  # (new template, source template, subject), added after the shuffle

    def add_template(subject, copy_of=None):
        t = new_id()
        templates[t] = subject
        if copy_of is not None:
            copies.append((t, copy_of, subject))
            return t
        for _ in range(rng.randint(1, 5)):
            media_next[0] += int(rng.randint(1, 50))
            m = media_next[0]
            for _ in range(rng.randint(1, 5)):
                norm = rng.uniform(5, 40)
                f = (centres[subject] / np.linalg.norm(centres[subject]) * norm + rng.normal(0, 6, dim)).astype(np.float32)
                score = "%.6f" % rng.uniform(0.3, 1.0)
                lmk = " ".join("%.3f" % v for v in rng.uniform(20, 90, 10))
                rows.append((f"img{len(rows)}.jpg", t, m, subject, f, score, lmk))
        return t

    for s in range(n_subjects):
        for _ in range(templates_per_subject):
            add_template(s)
    base = list(templates)
    for k in range(duplicates):
        src = base[k * 3 % len(base)]
        add_template(templates[src], copy_of=src)
    ids = list(templates)
    root = {t: src for t, src, _ in copies}
    # Pairs: genuine from same-subject templates, impostor otherwise; a few repeated and reversed.
    pairs = []
    by_subject = {}
    for t in ids:
        by_subject.setdefault(templates[t], []).append(t)
    n_impostor = int(round(n_pairs * 0.7))
    counts = [0, 0]  # impostor, genuine
    while len(pairs) < n_pairs:
        a = ids[rng.randint(len(ids))]
        if rng.rand() < 0.3:
            same = by_subject[templates[a]]
            b = same[rng.randint(len(same))]
        else:
            b = ids[rng.randint(len(ids))]
        if root.get(a, a) == root.get(b, b):
            # A template against itself or its copy scores 1 up to the last bit, which depends on the
            # summation order: not a tie any implementation can reproduce, so not generated.
            continue
        y = int(templates[a] == templates[b])
        if counts[y] >= (n_impostor if y == 0 else n_pairs - n_impostor):
            continue
        counts[y] += 1
        pairs.append((a, b, y))
    # Ties: ten genuine pairs listed again, as they are and reversed (the impostor count stays exact).
    for a, b, y in [p for p in pairs if p[2] == 1][:10]:
        pairs.append((a, b, y))
        pairs.append((b, a, y))
    lists = None
    if gallery:
        lists = {}
        half = n_subjects // 2
        g_subjects = [list(range(0, half)), list(range(half, n_subjects - 2))]  # two subjects in neither
        for gname, subj in zip(("G1", "G2"), g_subjects):
            lst = []
            for s in subj:
                t = add_template(s)
                lst += [(t, s, r[0]) for r in rows if r[1] == t]
            lists[gname] = lst
        # One gallery template duplicated under another subject of G1: a tie within probes' rows.
        t_src = lists["G1"][0][0]
        extra_subject = n_subjects + 7
        t_dup = add_template(extra_subject, copy_of=t_src)
        probes = []
        for s in range(n_subjects):
            for _ in range(2):
                t = add_template(s)
                probes += [(t, s, r[0]) for r in rows if r[1] == t]
        lists["probe"] = probes
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    # A copy lists its source's images in the source's file order: its float32 media means then add up
    # in the same order, so the copy's template feature is the same bits and its scores tie exactly.
    for t, src, subject in copies:
        for r in [r for r in rows if r[1] == src]:
            rows.append((f"img{len(rows)}.jpg", t, r[2], subject, r[4], r[5], r[6]))
    if gallery:
        lists["G1"] += [(t_dup, extra_subject, r[0]) for r in rows if r[1] == t_dup]
    return rows, pairs, lists


def write_case(out, target, rows, pairs, lists):
    pre = target.lower()
    meta = os.path.join(out, "meta")
    os.makedirs(meta, exist_ok=True)
    with open(os.path.join(meta, f"{pre}_face_tid_mid.txt"), "w") as f:
        f.writelines(f"{r[0]} {r[1]} {r[2]}\n" for r in rows)
    with open(os.path.join(meta, f"{pre}_name_5pts_score.txt"), "w") as f:
        f.writelines(f"{r[0]} {r[6]} {r[5]}\n" for r in rows)
    with open(os.path.join(meta, f"{pre}_template_pair_label.txt"), "w") as f:
        f.writelines(f"{a} {b} {y}\n" for a, b, y in pairs)
    if lists:
        names = {"G1": "G1", "G2": "G2"} if target == "IJBC" else {"G1": "S1", "G2": "S2"}
        for key, lst in lists.items():
            fname = f"{pre}_1N_probe_mixed.csv" if key == "probe" else f"{pre}_1N_gallery_{names[key]}.csv"
            with open(os.path.join(meta, fname), "w") as f:
                f.write("TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID\n")
                f.writelines(f"{t},{s},{name},0\n" for t, s, name in lst)
    feats = np.stack([r[4] for r in rows]).astype(np.float32)
    save_file({"features": feats}, os.path.join(out, "features.safetensors"))


# ---------------------------------------------------------------- the protocol, from the scripts' steps

def read_meta(out, target):
    pre = target.lower()
    tid = [l.split() for l in open(os.path.join(out, "meta", f"{pre}_face_tid_mid.txt")) if l.strip()]
    templates = np.array([int(x[1]) for x in tid])
    medias = np.array([int(x[2]) for x in tid])
    pts = [l.strip().split(" ") for l in open(os.path.join(out, "meta", f"{pre}_name_5pts_score.txt"))]
    faceness = np.array([x[-1] for x in pts]).astype(np.float32)
    pr = np.array([l.split() for l in open(os.path.join(out, "meta", f"{pre}_template_pair_label.txt"))]).astype(int)
    return templates, medias, faceness, pr[:, 0], pr[:, 1], pr[:, 2]


def image_inputs(img_feats, faceness, use_norm_score, use_detector_score):
    x = img_feats
    if not use_norm_score:
        x = x / np.sqrt(np.sum(x ** 2, -1, keepdims=True))
    if use_detector_score:
        x = x * faceness[:, np.newaxis]
    return x


def pool(img_feats, templates, medias, choose=None):
    """image2template_feature up to the normalization; returns (float32 sums, unique ids)."""
    unique = np.unique(templates) if choose is None else np.unique(choose)
    sums = np.zeros((len(unique), img_feats.shape[1]), dtype=np.float32)
    for c, uqt in enumerate(unique):
        (ind_t,) = np.where(templates == uqt)
        feats = img_feats[ind_t]
        med = medias[ind_t]
        um, counts = np.unique(med, return_counts=True)
        media_feats = []
        for u, ct in zip(um, counts):
            (ind_m,) = np.where(med == u)
            if ct == 1:
                media_feats += [feats[ind_m]]
            else:
                media_feats += [np.mean(feats[ind_m], axis=0, keepdims=True)]
        media_feats = np.array(media_feats)
        sums[c] = np.sum(media_feats, axis=0)
    return sums, unique


def verification(norm_feats, unique, p1, p2):
    template2id = np.zeros((max(unique) + 1, 1), dtype=int)
    for c, t in enumerate(unique):
        template2id[t] = c
    f1 = norm_feats[template2id[p1]]
    f2 = norm_feats[template2id[p2]]
    return np.sum(f1 * f2, -1).flatten()


def tar_table(label, score):
    fpr, tpr, _ = roc_curve(label, score)
    roc_auc = auc(fpr, tpr)
    fpr = np.flipud(fpr)
    tpr = np.flipud(tpr)
    out = {}
    for far in FARS:
        _, idx = min(list(zip(abs(fpr - far), range(len(fpr)))))
        out[far_key(far)] = {"tar": float(tpr[idx]), "fpr": float(fpr[idx])}
    return out, float(roc_auc), len(fpr)


def evaluation_1n(query, gallery, query_ids, reg_ids, fars=(0.01, 0.1)):
    sim = np.dot(query, gallery.T)
    top = {1: 0, 5: 0, 10: 0}
    pos, neg_max, non_gallery = [], [], []
    for i, qid in enumerate(query_ids):
        if qid in reg_ids:
            m = np.argwhere(reg_ids == qid)[0, 0]
            row = sim[i]
            others = np.delete(row, m)
            rank = 1 + int(np.sum(others >= row[m]))  # ties against the probe (our stated rule)
            for k in top:
                top[k] += rank <= k
            pos.append(row[m])
            neg_max.append(others.max())
        else:
            non_gallery.append(sim[i])
    pos, neg_max = np.array(pos), np.array(neg_max)
    correct = pos > neg_max
    ng = np.sort(np.array(non_gallery).max(1))[::-1]
    tpir = []
    for far in fars:
        th = ng[max(int(ng.shape[0] * far) - 1, 0)]
        tpir.append({"fpir": far, "threshold": float(th),
                     "tpir": float(np.logical_and(correct, pos > th).sum() / pos.shape[0])})
    return {"hits": [top[1], top[5], top[10]], "mated": len(pos), "probes": len(query_ids),
            "gallery": len(reg_ids), "tpir": tpir}


def reference(out, target, use_norm_score, use_detector_score, dim):
    import safetensors.numpy
    feats = safetensors.numpy.load_file(os.path.join(out, "features.safetensors"))["features"]
    templates, medias, faceness, p1, p2, label = read_meta(out, target)
    x = image_inputs(feats, faceness, use_norm_score, use_detector_score)
    sums, unique = pool(x, templates, medias)
    norm = sklearn.preprocessing.normalize(sums.astype(np.float64))
    score = verification(norm, unique, p1, p2)
    table, roc_auc, points = tar_table(label, score)
    sums.astype("<f4").tofile(os.path.join(out, "template_sums.f32"))
    score.astype("<f8").tofile(os.path.join(out, "scores.f64"))
    exp = {"target": target, "keep_norm": use_norm_score, "detector_score": use_detector_score,
           "tar_at_far": table, "auc": roc_auc, "roc_points": points, "templates": len(unique),
           "pairs": len(p1), "images": len(templates),
           "genuine": int(label.sum()), "impostor": int(len(label) - label.sum())}
    pre = target.lower()
    g_names = ("G1", "G2") if target == "IJBC" else ("S1", "S2")
    if os.path.exists(os.path.join(out, "meta", f"{pre}_1N_probe_mixed.csv")):
        def read_list(name):
            a = np.loadtxt(os.path.join(out, "meta", name), dtype=str, skiprows=1, delimiter=",")
            return a[:, 0].astype(int), a[:, 1].astype(int)

        def template_feats(choose_t, choose_s):
            uniq, idx = np.unique(choose_t, return_index=True)
            s, u = pool(x, templates, medias, choose=choose_t)
            assert (u == uniq).all()
            return sklearn.preprocessing.normalize(s.astype(np.float64)), choose_s[idx]

        pt, ps = read_list(f"{pre}_1N_probe_mixed.csv")
        pf, pids = template_feats(pt, ps)
        res = {}
        for g in g_names:
            gt, gs = read_list(f"{pre}_1N_gallery_{g}.csv")
            gf, gids = template_feats(gt, gs)
            res[g] = evaluation_1n(pf, gf, pids, gids)
        r1, r2 = res[g_names[0]], res[g_names[1]]
        n = len(pids)
        res["mean"] = {"cmc": [(r1["hits"][k] + r2["hits"][k]) / n for k in range(3)],
                       "tpir": [(a["tpir"] + b["tpir"]) / 2 for a, b in zip(r1["tpir"], r2["tpir"])]}
        exp["identification"] = res
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    return exp


def main():
    root = os.path.join(sys.argv[1], "ijb")
    # (name, target, subjects, templates/subject, dim, pairs, duplicates, 1:N, keep norm, detector score)
    cases = [
        ("ijbc_default", "IJBC", 40, 6, 24, 6000, 12, True, True, True),
        ("ijbc_n0", "IJBC", 30, 5, 16, 3000, 6, False, False, True),
        ("ijbb_d0", "IJBB", 36, 4, 20, 4000, 8, True, True, False),
        # 50 impostors: at FAR 1e-2 the points at FPR 0 and 0.02 are equally close (0.02 - 0.01 == 0.01
        # exactly in float64), and the script's tie rule picks FPR 0.02.
        ("ijbc_small", "IJBC", 10, 3, 8, 72, 2, False, True, True),
    ]
    for k, (name, target, ns, tps, dim, npairs, dup, gal, keep, det) in enumerate(cases):
        rng = np.random.RandomState(100 + k)
        out = os.path.join(root, name)
        os.makedirs(out, exist_ok=True)
        rows, pairs, lists = generate(rng, ns, tps, dim, npairs, dup, gal)
        write_case(out, target, rows, pairs, lists)
        exp = reference(out, target, keep, det, dim)
        print(f"ijb_ref.py: {name}: {exp['images']} images, {exp['templates']} templates, {exp['pairs']} pairs "
              f"({exp['impostor']} impostor), TAR@1e-4 {exp['tar_at_far']['1e-04']['tar']:.4f}")


if __name__ == "__main__":
    main()
