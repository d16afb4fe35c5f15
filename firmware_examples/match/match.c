/* The door's decision on a device that only receives embeddings.
 *
 * Input files (little-endian), written by make_inputs.py:
 *   gallery.bin : int32 n_templates, int32 dim, int32 person[n_templates], float32 t[n][dim]
 *   probes.bin  : int32 n_probes, int32 dim, float32 p[n][dim]
 * Arguments: gallery.bin probes.bin threshold margin
 * Output: one line per probe, "<person index or -1> <best score> <runner-up score>".
 * Templates and probes are L2-normalised, so the dot product is the cosine. A person's
 * score is the max over their templates (as edge.access.decide does); a probe is admitted
 * when the best person reaches the threshold and beats the runner-up by the margin.
 */
#include <stdio.h>
#include <stdlib.h>

static int read_i32(FILE *f, int *v) { return fread(v, sizeof *v, 1, f) == 1; }

static float dot(const float *a, const float *b, int dim) {
    float s = 0.0f;
    for (int i = 0; i < dim; ++i) s += a[i] * b[i];
    return s;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s gallery.bin probes.bin threshold margin\n", argv[0]);
        return 2;
    }
    FILE *g = fopen(argv[1], "rb"), *p = fopen(argv[2], "rb");
    if (!g || !p) { fprintf(stderr, "error: cannot open the input files\n"); return 2; }
    int n, dim, m, pdim, people = 0;
    if (!read_i32(g, &n) || !read_i32(g, &dim) || !read_i32(p, &m) || !read_i32(p, &pdim) ||
        dim != pdim || n <= 0 || dim <= 0) {
        fprintf(stderr, "error: malformed headers or embedding sizes differ\n");
        return 2;
    }
    int *person = malloc(sizeof(int) * n);
    float *templates = malloc(sizeof(float) * (size_t)n * dim);
    float *probe = malloc(sizeof(float) * dim);
    if (fread(person, sizeof(int), n, g) != (size_t)n ||
        fread(templates, sizeof(float), (size_t)n * dim, g) != (size_t)n * dim) {
        fprintf(stderr, "error: gallery.bin is truncated\n");
        return 2;
    }
    for (int i = 0; i < n; ++i) if (person[i] + 1 > people) people = person[i] + 1;
    float *best_of = malloc(sizeof(float) * people);
    double threshold = atof(argv[3]), margin = atof(argv[4]);
    for (int k = 0; k < m; ++k) {
        if (fread(probe, sizeof(float), dim, p) != (size_t)dim) {
            fprintf(stderr, "error: probes.bin is truncated\n");
            return 2;
        }
        for (int j = 0; j < people; ++j) best_of[j] = -2.0f;
        for (int i = 0; i < n; ++i) {
            float s = dot(templates + (size_t)i * dim, probe, dim);
            if (s > best_of[person[i]]) best_of[person[i]] = s;
        }
        int best = 0;
        float second = -2.0f;
        for (int j = 1; j < people; ++j) if (best_of[j] > best_of[best]) best = j;
        for (int j = 0; j < people; ++j) if (j != best && best_of[j] > second) second = best_of[j];
        int admitted = best_of[best] >= threshold && (people < 2 || best_of[best] - second >= margin);
        printf("%d %.6f %.6f\n", admitted ? best : -1, best_of[best], second);
    }
    free(person); free(templates); free(probe); free(best_of);
    fclose(g); fclose(p);
    return 0;
}
