/* Exact shortcuts for pix2pixHD's two 7x7 stem convolutions over the one-hot + edge input; see stems.py.
 *
 * Both functions check what they are given and return 0, or STEMS_NOMEM (an allocation failed), STEMS_BADCODE (a code
 * below 0 or beyond the table) or STEMS_BADSIZE (a map too small for the reflection padding, or a bad table size);
 * on an error nothing is read out of bounds and `out` is left unspecified. stems.py checks the same before calling. */
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { STEMS_OK = 0, STEMS_NOMEM = 1, STEMS_BADCODE = 2, STEMS_BADSIZE = 3 };

/* reflection padding 3 is valid for n >= 4 */
static inline int reflect(int i, int n) { if (i < 0) i = -i; if (i >= n) i = 2 * (n - 1) - i; return i; }

static int check_args(const int32_t *code, int H, int W, int ncodes, int O) {
    if (H < 7 || W < 7 || ncodes <= 0 || O <= 0) return STEMS_BADSIZE;  /* global stem: (H-1)/2+1 >= 4 */
    size_t n = (size_t)H * W;
    for (size_t i = 0; i < n; i++)
        if (code[i] < 0 || code[i] >= ncodes) return STEMS_BADCODE;
    return STEMS_OK;
}

/* local stem: out (O, H, W) = bias + sum over 7x7 taps of table[tap * ncodes + code] (reflect padding 3) */
int local_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
               int ncodes, int O, float *out, int threads) {
    int status = check_args(code, H, W, ncodes, O);
    if (status) return status;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    /* hu[y][x]: the 7-wide horizontal window centred at x (reflected) holds one code */
    uint8_t *hu = (uint8_t *)malloc((size_t)H * W);
    if (!hu) return STEMS_NOMEM;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < H; y++) {
        const int32_t *row = code + (size_t)y * W;
        for (int x = 0; x < W; x++) {
            int c = row[x], u = 1;
            for (int d = -3; d <= 3 && u; d++) u = row[reflect(x + d, W)] == c;
            hu[(size_t)y * W + x] = (uint8_t)u;
        }
    }
    int nomem = 0;
    #pragma omp parallel
    {
        float *acc = (float *)malloc(sizeof(float) * (size_t)W * O);
        if (!acc) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp for schedule(static)
        for (int y = 0; y < H; y++) {
            if (!acc) continue;
            int rows[7];
            for (int d = 0; d < 7; d++) rows[d] = reflect(y + d - 3, H);
            for (int x = 0; x < W; x++) {
                float *a = acc + (size_t)x * O;
                int c = code[(size_t)y * W + x], uniform = 1;
                for (int d = 0; d < 7 && uniform; d++)
                    uniform = hu[(size_t)rows[d] * W + x] && code[(size_t)rows[d] * W + x] == c;
                if (uniform) {
                    const float *s = wsum + (size_t)c * O;
                    for (int o = 0; o < O; o++) a[o] = bias[o] + s[o];
                    continue;
                }
                for (int o = 0; o < O; o++) a[o] = 0.0f;
                for (int dy = 0; dy < 7; dy++) {
                    const int32_t *r = code + (size_t)rows[dy] * W;
                    for (int dx = 0; dx < 7; dx++) {
                        const float *t = table + ((size_t)(dy * 7 + dx) * ncodes + r[reflect(x + dx - 3, W)]) * O;
                        for (int o = 0; o < O; o++) a[o] += t[o];
                    }
                }
                for (int o = 0; o < O; o++) a[o] += bias[o];
            }
            for (int o = 0; o < O; o++) {
                float *dst = out + ((size_t)o * H + y) * W;
                for (int x = 0; x < W; x++) dst[x] = acc[(size_t)x * O + o];
            }
        }
        free(acc);
    }
    free(hu);
    return nomem ? STEMS_NOMEM : STEMS_OK;
}

/* global stem: AvgPool2d(3, 2, 1, count_include_pad=False) then reflect pad 3 and a 7x7 conv, from codes */
int global_stem(const int32_t *code, int H, int W, const float *table, const float *wsum, const float *bias,
                int ncodes, int O, float *out, int threads) {
    int status = check_args(code, H, W, ncodes, O);
    if (status) return status;
#ifdef _OPENMP
    if (threads > 0) omp_set_num_threads(threads);
#endif
    int hh = (H - 1) / 2 + 1, hw = (W - 1) / 2 + 1;
    size_t cells = (size_t)hh * hw;
    int32_t *cc = (int32_t *)malloc(sizeof(int32_t) * cells * 9);   /* distinct codes of each pool cell */
    float *cw = (float *)malloc(sizeof(float) * cells * 9);           /* their weights: multiplicity / count */
    uint8_t *cn = (uint8_t *)malloc(cells);
    if (!cc || !cw || !cn) { free(cc); free(cw); free(cn); return STEMS_NOMEM; }
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < hh; i++) {
        for (int j = 0; j < hw; j++) {
            size_t k = (size_t)i * hw + j;
            int n = 0, count = 0, codes[9], mult[9];
            for (int dy = -1; dy <= 1; dy++) {
                int y = 2 * i + dy;
                if (y < 0 || y >= H) continue;
                for (int dx = -1; dx <= 1; dx++) {
                    int x = 2 * j + dx;
                    if (x < 0 || x >= W) continue;
                    int c = code[(size_t)y * W + x], f = 0;
                    count++;
                    for (int q = 0; q < n; q++) if (codes[q] == c) { mult[q]++; f = 1; break; }
                    if (!f) { codes[n] = c; mult[n] = 1; n++; }
                }
            }
            cn[k] = (uint8_t)n;
            for (int q = 0; q < n; q++) { cc[k * 9 + q] = codes[q]; cw[k * 9 + q] = (float)mult[q] / (float)count; }
        }
    }
    int nomem = 0;
    #pragma omp parallel
    {
        float *acc = (float *)malloc(sizeof(float) * (size_t)hw * O);
        if (!acc) {
            #pragma omp atomic write
            nomem = 1;
        }
        #pragma omp for schedule(static)
        for (int i = 0; i < hh; i++) {
            if (!acc) continue;
            int rows[7];
            for (int d = 0; d < 7; d++) rows[d] = reflect(i + d - 3, hh);
            for (int j = 0; j < hw; j++) {
                float *a = acc + (size_t)j * O;
                size_t k0 = (size_t)i * hw + j;
                int c = cc[k0 * 9], uniform = cn[k0] == 1;
                for (int dy = 0; dy < 7 && uniform; dy++)
                    for (int dx = 0; dx < 7 && uniform; dx++) {
                        size_t k = (size_t)rows[dy] * hw + reflect(j + dx - 3, hw);
                        uniform = cn[k] == 1 && cc[k * 9] == c;
                    }
                if (uniform) {
                    const float *s = wsum + (size_t)c * O;
                    for (int o = 0; o < O; o++) a[o] = bias[o] + s[o];
                    continue;
                }
                for (int o = 0; o < O; o++) a[o] = 0.0f;
                for (int dy = 0; dy < 7; dy++)
                    for (int dx = 0; dx < 7; dx++) {
                        size_t k = (size_t)rows[dy] * hw + reflect(j + dx - 3, hw);
                        const float *tap = table + (size_t)(dy * 7 + dx) * ncodes * O;
                        for (int q = 0; q < cn[k]; q++) {
                            const float *t = tap + (size_t)cc[k * 9 + q] * O;
                            float wq = cw[k * 9 + q];
                            for (int o = 0; o < O; o++) a[o] += wq * t[o];
                        }
                    }
                for (int o = 0; o < O; o++) a[o] += bias[o];
            }
            for (int o = 0; o < O; o++) {
                float *dst = out + ((size_t)o * hh + i) * hw;
                for (int j = 0; j < hw; j++) dst[j] = acc[(size_t)j * O + o];
            }
        }
        free(acc);
    }
    free(cc); free(cw); free(cn);
    return nomem ? STEMS_NOMEM : STEMS_OK;
}
