// The script of the bench report page (inlined by devtools/bench-report.ts after
// Chart.js's UMD bundle): draws, for every group, one chart per figure (the
// median per path as a bar, every round as a dot) and one chart of the
// ratios against the group's baseline path. Plain browser JavaScript.
(function () {
  const report = JSON.parse(document.getElementById('bench-data').textContent);
  const PALETTE = ['#7f8c8d', '#2e86de', '#27ae60', '#8e44ad', '#e67e22'];
  const color = (i, alpha) => {
    const hex = PALETTE[i % PALETTE.length];
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  };
  const m = report.machine;
  const host = `${m.hostname}: ${m.kernel}, ${m.cores} cores, load ${m.loadavg[0]}`;
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));
  Chart.defaults.animation = false;
  Chart.defaults.font.family = 'system-ui, sans-serif';
  Chart.defaults.maintainAspectRatio = false;
  const charts = [];

  for (const g of report.groups) {
    const labelOf = Object.fromEntries(g.paths.map((p) => [p.id, p.label]));
    for (const f of g.figures) {
      const canvas = document.getElementById(`chart-${g.id}-${f.key}`);
      const rounds = g.rounds.filter((r) => typeof r.values[f.key] === 'number');
      const chart = new Chart(canvas, {
        type: 'bar',
        data: {
          labels: g.paths.map((p) => p.label),
          datasets: [
            {
              type: 'bar',
              label: 'median',
              data: g.paths.map((p) => g.median[p.id][f.key]),
              backgroundColor: g.paths.map((_, i) => color(i, 0.45)),
              borderColor: g.paths.map((_, i) => color(i, 1)),
              borderWidth: 1,
              order: 2,
            },
            {
              type: 'scatter',
              label: 'each round',
              data: rounds.map((r) => ({ x: labelOf[r.path], y: r.values[f.key], round: r.round })),
              backgroundColor: 'rgba(20, 20, 20, 0.8)',
              pointRadius: 3.5,
              order: 1,
            },
          ],
        },
        options: {
          plugins: {
            title: { display: true, text: `${f.label} (${f.unit}, ${f.better} is better)` },
            subtitle: { display: true, text: `bar: median · dot: one round · ${host}` },
            legend: { display: false },
            tooltip: {
              callbacks: {
                label: (ctx) =>
                  ctx.dataset.type === 'scatter'
                    ? `round ${ctx.raw.round}: ${fmt(ctx.raw.y)} ${f.unit}`
                    : `median: ${fmt(ctx.raw)} ${f.unit} (${fmt(g.ratio[g.paths[ctx.dataIndex].id][f.key])}× ${labelOf[g.baseline]})`,
              },
            },
          },
          scales: { y: { beginAtZero: true, title: { display: true, text: f.unit } } },
        },
      });
      charts.push({ group: g.id, figure: f.key, kind: 'rounds', canvas: canvas.id, chart });
    }

    const canvas = document.getElementById(`chart-${g.id}-ratio`);
    const chart = new Chart(canvas, {
      type: 'bar',
      data: {
        labels: g.figures.map((f) => `${f.label} (${f.better === 'lower' ? '< 1 is better' : '> 1 is better'})`),
        datasets: g.paths.map((p, i) => ({
          label: p.label,
          data: g.figures.map((f) => g.ratio[p.id][f.key]),
          backgroundColor: color(i, 0.7),
        })),
      },
      options: {
        indexAxis: 'y',
        plugins: {
          title: { display: true, text: `median against ${labelOf[g.baseline]} (×)` },
          subtitle: { display: true, text: `measured on ${host}` },
          legend: { position: 'bottom' },
          tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${fmt(ctx.raw)}×` } },
        },
        scales: { x: { beginAtZero: true, title: { display: true, text: `× ${labelOf[g.baseline]}` } } },
      },
    });
    charts.push({ group: g.id, figure: 'ratio', kind: 'ratio', canvas: canvas.id, chart });
  }

  // for tests and the curious: what was drawn
  window.podwarpCharts = charts;
  document.body.dataset.ready = 'true';
})();
