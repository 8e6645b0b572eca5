/*
 * CPU kernel of msrcnn.ops.batched_soft_nms: Soft-NMS (Bodla et al., 2017) with Detectron
 * semantics, one class after another, one selected box at a time.
 *
 * Python calls it through msrcnn/ops/soft_nms.py (never directly), with the boxes already grouped
 * by class. Per class: take the remaining box with the highest score (the lowest position on a
 * tie), rescale every other remaining box b by its IoU with it
 *
 *   linear:   s_b *= 1 - IoU   when IoU > iou_threshold
 *   gaussian: s_b *= exp(-IoU^2 / sigma)
 *
 * and drop the boxes whose score falls below score_threshold. The IoU is computed with the same
 * float32 operations, in the same order, as torchvision.ops.box_iou (build with
 * -ffp-contract=off so that the compiler does not fuse them), and each rescaling is one float32
 * multiplication, in selection order. The vectorised PyTorch path multiplies the factors of one
 * round together and computes exp with its own vectorised code, so its scores may differ from
 * these in the last bits (tests compare both with a textbook reference to 1e-6).
 *
 * Built by `make install` (tools/build_kernels.py) and by `pip install`; when it is absent,
 * soft_nms.py runs the vectorised PyTorch path, which keeps the same boxes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Soft-NMS inside one class: positions [start, stop) of the class-grouped arrays.
 * work: scratch of (stop - start) int64 positions and floats; returns the number kept and writes
 * (position, new score) pairs in selection order at keep_pos / keep_score. */
static Py_ssize_t soft_nms_class(const float *boxes, const float *areas, const float *scores,
                                 Py_ssize_t start, Py_ssize_t stop, float iou_threshold,
                                 float sigma, float score_threshold, int gaussian,
                                 int64_t *rem_pos, float *rem_score, int64_t *keep_pos,
                                 float *keep_score) {
    Py_ssize_t n = 0;
    for (Py_ssize_t p = start; p < stop; p++) {
        if (scores[p] >= score_threshold) { /* NaN scores never pass */
            rem_pos[n] = p;
            rem_score[n] = scores[p];
            n++;
        }
    }
    Py_ssize_t kept = 0;
    while (n > 0) {
        Py_ssize_t best = 0;
        for (Py_ssize_t i = 1; i < n; i++) {
            if (rem_score[i] > rem_score[best] ||
                (rem_score[i] == rem_score[best] && rem_pos[i] < rem_pos[best])) {
                best = i;
            }
        }
        const int64_t m = rem_pos[best];
        keep_pos[kept] = m;
        keep_score[kept] = rem_score[best];
        kept++;
        n--;
        rem_pos[best] = rem_pos[n];
        rem_score[best] = rem_score[n];

        const float mx1 = boxes[4 * m], my1 = boxes[4 * m + 1];
        const float mx2 = boxes[4 * m + 2], my2 = boxes[4 * m + 3];
        const float marea = areas[m];
        Py_ssize_t i = 0;
        while (i < n) {
            const int64_t b = rem_pos[i];
            float w = fminf(mx2, boxes[4 * b + 2]) - fmaxf(mx1, boxes[4 * b]);
            float h = fminf(my2, boxes[4 * b + 3]) - fmaxf(my1, boxes[4 * b + 1]);
            w = w > 0.0f ? w : 0.0f;
            h = h > 0.0f ? h : 0.0f;
            const float inter = w * h;
            /* no shortcut for disjoint boxes: 0 / 0 (two empty boxes) must give NaN as in torch */
            const float iou = inter / (marea + areas[b] - inter);
            float factor = 1.0f;
            if (gaussian) {
                factor = expf(-(iou * iou) / sigma);
            } else if (iou > iou_threshold) {
                factor = 1.0f - iou;
            }
            const float s = rem_score[i] * factor;
            if (s >= score_threshold) {
                rem_score[i] = s;
                i++;
            } else { /* dropped: the last remaining box takes its place */
                n--;
                rem_pos[i] = rem_pos[n];
                rem_score[i] = rem_score[n];
            }
        }
    }
    return kept;
}

/* soft_nms(boxes, scores, offsets, iou_threshold, sigma, score_threshold, gaussian,
 *          keep_pos, keep_score) -> number kept
 *
 * boxes: float32 [n, 4] (x1, y1, x2, y2), grouped by class; scores: float32 [n];
 * offsets: int64 [C + 1], class c holds positions [offsets[c], offsets[c + 1]);
 * keep_pos: int64 [n] and keep_score: float32 [n], written (first `kept` entries). */
static PyObject *py_soft_nms(PyObject *self, PyObject *args) {
    Py_buffer boxes, scores, offsets, keep_pos, keep_score;
    float iou_threshold, sigma, score_threshold;
    int gaussian;
    if (!PyArg_ParseTuple(args, "y*y*y*fffpw*w*", &boxes, &scores, &offsets, &iou_threshold, &sigma,
                          &score_threshold, &gaussian, &keep_pos, &keep_score)) {
        return NULL;
    }
    PyObject *result = NULL;
    const Py_ssize_t n = scores.len / (Py_ssize_t)sizeof(float);
    const Py_ssize_t num_offsets = offsets.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *off = (const int64_t *)offsets.buf;
    float *areas = NULL, *rem_score = NULL;
    int64_t *rem_pos = NULL;
    if (boxes.len != 4 * n * (Py_ssize_t)sizeof(float) ||
        keep_pos.len != n * (Py_ssize_t)sizeof(int64_t) ||
        keep_score.len != n * (Py_ssize_t)sizeof(float) || num_offsets < 1 || off[0] != 0 ||
        off[num_offsets - 1] != n) {
        PyErr_SetString(PyExc_ValueError,
                        "soft_nms: expected boxes [n, 4] float32, scores [n] float32, offsets "
                        "[C + 1] int64 from 0 to n, keep_pos [n] int64, keep_score [n] float32");
        goto done;
    }
    for (Py_ssize_t c = 1; c < num_offsets; c++) {
        if (off[c] < off[c - 1]) {
            PyErr_SetString(PyExc_ValueError, "soft_nms: offsets must be non-decreasing");
            goto done;
        }
    }
    areas = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    rem_score = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    rem_pos = (int64_t *)malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    if (areas == NULL || rem_score == NULL || rem_pos == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const float *bx = (const float *)boxes.buf;
    const float *sc = (const float *)scores.buf;
    int64_t *kp = (int64_t *)keep_pos.buf;
    float *ks = (float *)keep_score.buf;
    Py_ssize_t kept = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t p = 0; p < n; p++) {
        areas[p] = (bx[4 * p + 2] - bx[4 * p]) * (bx[4 * p + 3] - bx[4 * p + 1]);
    }
    for (Py_ssize_t c = 0; c + 1 < num_offsets; c++) {
        kept += soft_nms_class(bx, areas, sc, off[c], off[c + 1], iou_threshold, sigma,
                               score_threshold, gaussian, rem_pos, rem_score, kp + kept, ks + kept);
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(kept);
done:
    free(areas);
    free(rem_score);
    free(rem_pos);
    PyBuffer_Release(&boxes);
    PyBuffer_Release(&scores);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&keep_pos);
    PyBuffer_Release(&keep_score);
    return result;
}

static PyMethodDef methods[] = {
    {"soft_nms", py_soft_nms, METH_VARARGS,
     "Soft-NMS over class-grouped float32 boxes (internal; use msrcnn.ops.batched_soft_nms)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_soft_nms_cpu",
    "CPU kernel of msrcnn.ops.batched_soft_nms (internal).", -1, methods,
};

PyMODINIT_FUNC PyInit__soft_nms_cpu(void) { return PyModule_Create(&module); }
